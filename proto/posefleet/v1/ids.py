"""Identifiers of the posefleet.v1 contract: what a camera id and a node id (a holder's name) may be."""

from __future__ import annotations

import re

#: Camera ids: 1-128 printable characters without spaces (they become metric labels, log words, URIs).
CAMERA_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def camera_id_problem(camera_id: str) -> str | None:
    """Why ``camera_id`` cannot name a camera, or None."""
    if not camera_id:
        return "camera_id is required on a camera stream"
    if not CAMERA_ID.fullmatch(camera_id):
        shown = camera_id[:40].encode("unicode_escape").decode()
        return (
            f"camera_id {shown!r}{'...' if len(camera_id) > 40 else ''} is not 1-128 of the characters "
            "A-Z a-z 0-9 . _ : @ / + = -"
        )
    return None


#: Node ids (and every fleet certificate holder's name): a DNS label, as they become ``NAME.ROLE.posefleet``.
NODE_ID = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def node_id_problem(node_id: str) -> str | None:
    """Why ``node_id`` cannot name a node (or a certificate's holder), or None."""
    if not NODE_ID.fullmatch(node_id):
        shown = node_id[:40].encode("unicode_escape").decode()
        return f"node id {shown!r}: 1-63 letters, digits and '-', not starting or ending with '-' (a DNS label)"
    return None

"""Identifiers of the posefleet.v1 contract: what a camera id may be."""

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

"""The one base class of errors a user can cause."""

from __future__ import annotations


class PosefleetError(Exception):
    """An error the user can fix (bad file, bad flag, bad settings, missing model...).

    The CLI prints its message as one line and exits with status 2; servers answer it with a clear
    status instead of a traceback. Every user-causable error in posefleet derives from it.
    """

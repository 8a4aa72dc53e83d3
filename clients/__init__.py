"""posefleet package."""

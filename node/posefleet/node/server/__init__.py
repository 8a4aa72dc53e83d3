"""The gRPC node server: ``posefleet node`` (engine behind PoseNode, health, zeroconf, metrics)."""

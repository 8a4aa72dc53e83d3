"""Generated protobuf and gRPC code for the posefleet.v1 contract."""

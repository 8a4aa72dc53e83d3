"""The benchmarks, load generators and test doubles (in-process nodes): what measures posefleet, kept out of
the packages a node, a coordinator or a camera runs (an import contract says so)."""

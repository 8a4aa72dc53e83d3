"""Source model formats, one module each; ``posefleet.node.convert.core.source_formats`` finds them."""

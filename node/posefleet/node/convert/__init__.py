"""Build time: turn a source model into an OpenVINO IR with a model card, and download official models.

``convert`` tries every source format in ``sources/`` (one module each, found by name like the model
families); a new format is one new module there. Nothing here runs on a node's frame path.
"""

from posefleet.node.convert.core import convert, detect_format
from posefleet.node.convert.formats import ConversionError, Converted, Precision, SourceFormat

__all__ = ["ConversionError", "Converted", "Precision", "SourceFormat", "convert", "detect_format"]

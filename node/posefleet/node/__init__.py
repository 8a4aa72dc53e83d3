"""The node: what each edge machine runs.

- ``engine/``: the pose engine (OpenVINO inference, model families, decoders); never imports ``posefleet.v1``.
- ``convert/``: build time: source models -> IR + model card, and downloads of official models.
- ``server/``: the gRPC node server (``posefleet node``) built on the engine and the wire contract.
- ``tools/``: offline commands (``pose``, ``eval``, ``bench``, ``convert``, ``models``) and rendering.
"""

"""The merge: people tracked per camera, and calibrated cameras of one scene fused into 3D people.

Pure algorithms on NumPy arrays (no wire contract, no OpenVINO): the coordinator runs them live on the
results it routes, ``posefleet pose`` tracks people in videos with them, and ``posefleet fuse`` runs them
offline on recorded footage. A 2D pose is a (17, 3) array of (x, y, score) in image pixels, COCO order.

- ``tracking``: per-camera keypoint tracker (OKS similarity, box-IoU fallback), persistent track ids.
- ``filters``: the One-Euro filter, vectorised over keypoints.
- ``calibration``: Pose2Sim/anipose calibration TOML -> cameras; resolution checks; undistortion.
- ``triangulation``: confidence-weighted DLT, vectorised over joints, with camera exclusion.
- ``association``: which 2D poses of several cameras are the same person (ray distances).
- ``scene``: one window of a scene's views -> 3D people with persistent ids.
- ``formats``: OpenPose JSON folders in, TRC out.
"""

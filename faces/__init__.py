"""The parts of DetectionPipeline.py: detection (mtcnn.py, nets.py), tracking (tracking.py), cropping
(images.py), the pipeline that joins them for one video (pipeline.py) and the decoding workers that feed
one process's networks with many videos at once (workers.py)."""

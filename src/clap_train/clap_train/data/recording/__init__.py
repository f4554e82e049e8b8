"""Recording -> dataset: bag reading, alignment, gaps, camera encoding, the LeRobot v3.0 writer, conversion.

Also the dataset builders that need no robot: scripted synthetic episodes (``synthetic.py``) and
synthetic rosbag2 recordings for tests (``synthetic_bag.py``). Nothing here reads training samples.
"""

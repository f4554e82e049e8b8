"""Data: the topic contract, rosbag2 reading and alignment, the LeRobot v3.0 writer, the training loader."""

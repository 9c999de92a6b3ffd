"""What makes the toydefer backend buildable: present only on its 'device' (a farm node
whose PYTHONPATH has this folder), as TensorRT is only on a Jetson."""

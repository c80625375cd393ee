"""What the operators and sensors are built on: the connection arguments, the IDs and the deferral."""

"""The engine's face, shared by both methods: `segmenter.Segmenter` (the base class every method implements),
`methods` (which method a checkpoint is), `result` (what a call returns), `config` (the settings base and its
checks), `vocabulary`, `loading`, `image_io`, `profiling` and `visualize`. No rclpy, no method imported here."""

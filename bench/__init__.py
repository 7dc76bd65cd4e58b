"""`ncc bench`: benchmarks of every target beside the peer paths, and their report.

`suite` runs the measurements, `models` builds and trains the suite, `peers` runs the
paths users take today (onnxruntime `quantize_static`, `tf.lite.TFLiteConverter`),
`report` writes results.json, report.md and plots.
"""

"""Drawing keypoints: matplotlib figures and frame overlays that several layers write.

- :mod:`~lpray.viz.figures`: the PNG writer (:func:`~lpray.viz.figures.save_figure`) and the
  labels-vs-predictions grid.
- :mod:`~lpray.viz.overlay`: keypoints drawn on video frames (labeled mp4, PNG strip), and the
  keypoint colours the frame-selection page shares.

It sits below train, tune, track, select and report (it imports only ``data`` and ``io``), so a
layer that draws does not import the report layer above it.
"""

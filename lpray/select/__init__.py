"""Which frames to label next: ``lpray select-frames`` and ``lpray merge-labels``.

After ``lpray track``, every frame of every video has signals of how unsure the ensemble is. This
package ranks the frames of a tracked corpus by them and hands a labeling folder to the labeler:

- :mod:`lpray.select.tracked`: reads one tracked video's outputs (member tables, EKS table,
  optional ``<video>.metrics.csv``), one video at a time;
- :mod:`lpray.select.scoring`: the per-frame signals and their robust combination (the score);
- :mod:`lpray.select.picking`: quotas over videos, a minimum frame gap, k-means diversity;
- :mod:`lpray.select.extraction`: decodes chosen frames (and their context frames), writes PNGs
  and the ``CollectedData.csv`` stub prefilled with the EKS guess (also written as DeepLabCut's
  per-video label files by :func:`lpray.projects.dlc.write_labels`);
- :mod:`lpray.select.page`: the HTML page of the picks (members' predictions overlaid, and why);
- :mod:`lpray.select.run`: the command's flow; :mod:`lpray.select.merge`: ``merge-labels``
  (local folders or URLs).
"""

"""The one exception base for mistakes a user can fix.

Every error lpray raises because of its input (a config key, a labels file, a video, a model
directory, an ensemble member table) derives from :class:`UserError`. The command line catches it
once (:func:`lpray.cli.main`) and prints its message as one line on stderr, with no traceback;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or outputs that the user can fix.

    Messages follow one pattern: the file or key concerned, the problem, and what to do about it,
    for example ``"data.train_frames=500 asks for 500 labeled frames but the train split of
    labels.csv has 21; lower it or label more frames"``.

    Subclasses usually also derive from the built-in exception they replaced (``ValueError``,
    ``RuntimeError``), so code written against those keeps catching them.
    """

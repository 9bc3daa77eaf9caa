"""The interactive web app (Gradio): upload an image, type classes, segment automatically or
prompt with clicks, boxes and scribbles.

>>> from ovseg import Segmenter
>>> from ovseg.app import build_app
>>> build_app(Segmenter("tiny-random", "tiny-random")).launch()  # doctest: +SKIP

The page is built by :func:`build_app`; its logic lives in plain functions
(:mod:`ovseg.app.handlers`: session state in, session out; :mod:`ovseg.app.render`: what the
page shows) that are tested without a browser. Only :func:`build_app` imports Gradio.
"""

from ovseg.app.session import Session, Settings, example_images


def build_app(segmenter, **options):
    """The app as a ``gr.Blocks`` with its queue enabled: see :func:`ovseg.app.ui.build_app`.

    Raises:
        ModuleNotFoundError: Gradio is not installed (``pip install 'ovseg[app]'``).
    """
    from ovseg.app.ui import build_app as build

    return build(segmenter, **options)


__all__ = ["Session", "Settings", "build_app", "example_images"]

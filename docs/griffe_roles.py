"""A griffe extension of the documentation build: ovseg's docstrings name objects with reST
roles (:class:`~ovseg.pipeline.Segmenter`, ``:func:``, ``:meth:``, ``:mod:``, ``:data:``,
``:attr:``, ``:exc:``). Each role becomes a cross-reference: a link where the site documents
the object, code where it does not. A role that names no object of the package (a typo, a
renamed function) is a warning, so ``mkdocs build --strict`` fails on it.

Targets are resolved as Python would read the name in the docstring's scope: an absolute
dotted path, or a name (``Segmenter``, ``Method.config``) seen from the object's class or
module, imports included.
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([A-Za-z_][\w.]*)`")
EXTERNAL = ("torch", "numpy", "np", "PIL", "open_clip", "transformers", "gradio", "ray",
            "supervision", "segment_anything", "sam2", "faiss", "pycocotools", "timm", "pathlib",
            "typing", "collections", "argparse", "concurrent", "cv2", "av", "sklearn",
            "dataclasses", "os", "io", "json", "tqdm")  # fmt: skip


class RoleReferences(griffe.Extension):
    """Rewrite reST roles into autorefs cross-references (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                text = obj.docstring.value
                obj.docstring.value = ROLE.sub(lambda m, o=obj: _reference(o, m), text)


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _reference(obj: griffe.Object, match: re.Match) -> str:
    short, target = match.group(1) == "~", match.group(2)
    title = target.rsplit(".", 1)[-1] if short else target
    path = _resolve(obj, target)
    if path is None:
        if target.split(".", 1)[0] not in EXTERNAL:
            griffe.logger.warning(
                "%s: the docstring's reference %r names no object of the package",
                obj.path,
                target,
            )
        return f"`{title}`"
    code = f"<code>{html.escape(title)}</code>"
    return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path of ``target`` seen from ``obj``, or None when nothing of that name exists."""
    head, _, rest = target.partition(".")
    for scope in [obj, *_parents(obj)]:
        base = None
        if scope.is_class and head in scope.all_members:  # inherited members too
            base = f"{scope.path}.{head}"
        else:
            try:
                base = scope.resolve(head)
            except (griffe.NameResolutionError, AttributeError, KeyError):
                pass
        if base is None and scope.is_module and head == scope.path.rsplit(".", 1)[-1]:
            base = scope.path
        if base is None:
            continue
        path = f"{base}.{rest}" if rest else base
        if _exists(obj, path):
            return path
    if _exists(obj, target):
        return target
    return None


def _parents(obj: griffe.Object):
    parent = obj.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def _exists(obj: griffe.Object, path: str) -> bool:
    """Whether ``path`` names an object of ``obj``'s package (inherited members included)."""
    root = obj.package
    if path != root.path and not path.startswith(root.path + "."):
        return False
    found = root
    for name in path.split(".")[1:]:
        try:
            members = found.all_members if found.is_class else found.members
            found = members[name]
            if found.is_alias:
                found = found.final_target
        except (KeyError, AttributeError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return False
    return True

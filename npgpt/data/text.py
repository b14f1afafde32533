"""Text for the language models: the built-in corpus and UTF-8 text files."""

from __future__ import annotations

from pathlib import Path

try:        # part of the standard library, but some distributions strip it: then it is None
    from pydoc_data.topics import topics as _TOPICS
except ImportError:
    _TOPICS = None


def default_corpus() -> str:
    """The built-in corpus: the text of Python's documentation topics (about 460 KB of English).

    CPython ships, in the standard library module pydoc_data.topics, the text that help('topic')
    shows: a dict {topic name: text} made from the language reference ("assert", "for",
    "formatstrings", ...). Joined in sorted key order with blank lines between, it is a corpus
    that every Python install has and that needs no download. Its exact size depends on the
    Python version.
    """
    if _TOPICS is None:
        raise ImportError("default_corpus() needs the standard library module pydoc_data.topics, "
                          "which this Python lacks (some distributions strip it): install the full "
                          "standard library, or pass a text file (load_text)")
    return "\n\n".join(_TOPICS[k] for k in sorted(_TOPICS))


def load_text(path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped, line ends are kept).

    A missing file, a directory, bytes that are not UTF-8 (the error gives their offset) or an
    empty file raise an error that names the path.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {str(path)!r} does not exist: expected a UTF-8 text file")
    if path.is_dir():
        raise IsADirectoryError(f"path {str(path)!r} is a directory: expected a UTF-8 text file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"path {str(path)!r} is not UTF-8 text: byte 0x{data[e.start]:02x} at "
                         f"offset {e.start} ({e.reason})") from None
    text = text.removeprefix("\ufeff")
    if not text:
        raise ValueError(f"path {str(path)!r} is empty: expected some text")
    return text

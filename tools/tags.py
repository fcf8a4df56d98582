"""Definitions and references of a source file, from tree-sitter tag queries.

Grammars come from the per-language wheels (tree-sitter-python, -javascript, ...), which bundle the compiled
parser and, for every language here, a `queries/tags.scm`; nothing is downloaded at run time. Where a bundled
query captures no references (C, C++) or too few for ranking (Python: calls only), EXTRA_QUERIES adds our own.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import tree_sitter

# extension -> (grammar module, function returning the language pointer, language name)
_GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
}
EXTENSIONS = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".rb": "ruby",
}
# TypeScript's bundled tags.scm only covers TypeScript-specific syntax; its grammar extends JavaScript's.
_ALSO_USES = {"typescript": ["tree_sitter_javascript"], "tsx": ["tree_sitter_javascript"]}

EXTRA_QUERIES = {
    "python": """
(class_definition superclasses: (argument_list (identifier) @name)) @reference.class
(class_definition superclasses: (argument_list (attribute attribute: (identifier) @name))) @reference.class
(type (identifier) @name) @reference.type
(import_from_statement name: (dotted_name (identifier) @name)) @reference.import
(import_from_statement name: (aliased_import name: (dotted_name (identifier) @name))) @reference.import
(decorator (identifier) @name) @reference.call
(decorator (attribute attribute: (identifier) @name)) @reference.call
""",
    "c": """
(call_expression function: (identifier) @name) @reference.call
(type_identifier) @name @reference.type
""",
    "cpp": """
(call_expression function: (identifier) @name) @reference.call
(call_expression function: (field_expression field: (field_identifier) @name)) @reference.call
(call_expression function: (qualified_identifier name: (identifier) @name)) @reference.call
(type_identifier) @name @reference.type
""",
}

MAX_SIGNATURE_CHARS = 120


@dataclass(frozen=True)
class Definition:
    name: str
    kind: str  # "class", "function", "method", ... from the query's capture name
    line: int  # 1-based line of the name
    signature: str  # that source line, right-stripped and cut to MAX_SIGNATURE_CHARS
    parent: int  # index of the enclosing definition in the same file, or -1


@dataclass(frozen=True)
class FileTags:
    definitions: list[Definition]
    references: dict[str, int]  # identifier -> number of references in the file


def language_of(path: str) -> str | None:
    dot = path.rfind(".")
    return EXTENSIONS.get(path[dot:].lower()) if dot != -1 else None


@lru_cache(maxsize=None)
def _query_source(language: str) -> str:
    module_name, _ = _GRAMMARS[language]
    parts = [resources.files(module).joinpath("queries/tags.scm").read_text(encoding="utf-8")
             for module in _ALSO_USES.get(language, []) + [module_name]]
    return "\n".join(parts + [EXTRA_QUERIES.get(language, "")])


@lru_cache(maxsize=None)
def _parser_and_query(language: str) -> tuple[tree_sitter.Parser, tree_sitter.Query]:
    module_name, function = _GRAMMARS[language]
    lang = tree_sitter.Language(getattr(importlib.import_module(module_name), function)())
    return tree_sitter.Parser(lang), tree_sitter.Query(lang, _query_source(language))


def tagger_version() -> str:
    """Changes whenever the queries or grammar versions change, so cached tags from older ones are dropped."""
    digest = hashlib.sha256()
    for language, (module, _) in sorted(_GRAMMARS.items()):
        try:
            version = importlib.metadata.version(module.replace("_", "-"))
            query = _query_source(language)
        except (ImportError, OSError):  # not installed: collect_tags reports it when a file needs it
            version, query = "missing", ""
        digest.update(f"{language}:{version}:{query}".encode())
    digest.update(f"tree-sitter:{importlib.metadata.version('tree-sitter')}:sig{MAX_SIGNATURE_CHARS}".encode())
    return digest.hexdigest()[:16]


def extract_tags(source: bytes, language: str) -> FileTags:
    """Parse `source` and collect its definitions (with enclosing definition) and reference counts."""
    parser, query = _parser_and_query(language)
    tree = parser.parse(source)
    lines = source.split(b"\n")
    found: list[tuple[tuple[int, int], str, str, int]] = []  # (def node span, name, kind, name row)
    references: Counter[str] = Counter()
    for _, captures in tree_sitter.QueryCursor(query).matches(tree.root_node):
        names = captures.get("name")
        role = next((key for key in captures if key.startswith(("definition.", "reference."))), None)
        if not names or role is None:
            continue
        for name_node in names:
            name = name_node.text.decode("utf-8", errors="replace")
            if role.startswith("reference."):
                references[name] += 1
            else:
                node = captures[role][0]
                found.append(((node.start_byte, node.end_byte), name, role.split(".", 1)[1],
                              name_node.start_point[0]))
    found.sort(key=lambda item: (item[0][0], -item[0][1]))
    definitions: list[Definition] = []
    open_spans: list[tuple[int, int, int]] = []  # stack of (start, end, index) of enclosing definitions
    seen: set[tuple[str, int]] = set()
    for (start, end), name, kind, row in found:
        if (name, row) in seen:  # the same definition matched by two patterns
            continue
        seen.add((name, row))
        while open_spans and open_spans[-1][1] <= start:
            open_spans.pop()
        parent = open_spans[-1][2] if open_spans else -1
        text = lines[row].decode("utf-8", errors="replace").rstrip() if row < len(lines) else name
        definitions.append(Definition(name, kind, row + 1, text[:MAX_SIGNATURE_CHARS], parent))
        open_spans.append((start, end, len(definitions) - 1))
    return FileTags(definitions, dict(references))

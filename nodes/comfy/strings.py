"""ComfyUI's text nodes (comfy_extras/nodes_string.py), with its inputs, outputs and behaviour:
format, concatenate, substring, length, case, trim, replace, contains, compare, the regular
expression nodes and the JSON ones. All are `pure` (graph.lazy may compute them to decide a switch)."""
from __future__ import annotations

import json
import re
import string

from graph import Boolean, Combo, In, Int, Node, Out, String


class _Text(Node):
    category = "text"
    pure = True
    outputs = (Out("STRING", "STRING"),)


def _flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    return ((re.IGNORECASE if case_insensitive else 0) | (re.MULTILINE if multiline else 0)
            | (re.DOTALL if dotall else 0))


class _SafeFormatter(string.Formatter):
    """str.format without reaching into attributes such as `{a.__class__}`: only plain attributes
    and indexes, so a format string cannot walk from a value to the server's internals."""

    def get_field(self, field_name, args, kwargs):
        if any(part.startswith("_") for part in re.split(r"[.\[\]]", field_name)):
            raise ValueError(f"the field {{{field_name}}} reaches a private attribute")
        return super().get_field(field_name, args, kwargs)


class StringFormat(_Text):
    """Python's format of `f_string` with the inputs a, b, c, ... ({a}, {b:.2f}, ...). ComfyUI grows
    these inputs as they are linked (an Autogrow group `values`); Loom declares all 26."""
    display_name = "Format Text"
    locals().update({f"values.{c}": In("*", optional=True) for c in string.ascii_lowercase})
    f_string = String("{a}", multiline=True)

    def run(self, ctx):
        values = {c: getattr(self, f"values.{c}") for c in string.ascii_lowercase
                  if getattr(self, f"values.{c}", None) is not None}
        return _SafeFormatter().vformat(self.f_string, (), values)


class StringConcatenate(_Text):
    display_name = "Concatenate Text"
    string_a = String(multiline=True)
    string_b = String(multiline=True)
    delimiter = String("")

    def run(self, ctx):
        return self.delimiter.join((self.string_a, self.string_b))


class StringSubstring(_Text):
    display_name = "Substring"
    string = String(multiline=True)
    start = Int(0)
    end = Int(0)

    def run(self, ctx):
        return self.string[self.start:self.end]


class StringLength(_Text):
    display_name = "Text Length"
    string = String(multiline=True)
    outputs = (Out("INT", "length"),)

    def run(self, ctx):
        return len(self.string)


class CaseConverter(_Text):
    display_name = "Convert Text Case"
    string = String(multiline=True)
    mode = Combo(["UPPERCASE", "lowercase", "Capitalize", "Title Case"])

    def run(self, ctx):
        convert = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize,
                   "Title Case": str.title}
        return convert.get(self.mode, str)(self.string)


class StringTrim(_Text):
    display_name = "Trim Text"
    string = String(multiline=True)
    mode = Combo(["Both", "Left", "Right"])

    def run(self, ctx):
        return {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}.get(self.mode, str)(self.string)


class StringReplace(_Text):
    display_name = "Replace Text"
    string = String(multiline=True)
    find = String(multiline=True)
    replace = String(multiline=True)

    def run(self, ctx):
        return self.string.replace(self.find, self.replace)


class StringContains(_Text):
    display_name = "Contains Text"
    string = String(multiline=True)
    substring = String(multiline=True)
    case_sensitive = Boolean(True)
    outputs = (Out("BOOLEAN", "contains"),)

    def run(self, ctx):
        if self.case_sensitive:
            return self.substring in self.string
        return self.substring.lower() in self.string.lower()


class StringCompare(_Text):
    display_name = "Compare Text"
    string_a = String(multiline=True)
    string_b = String(multiline=True)
    mode = Combo(["Starts With", "Ends With", "Equal"])
    case_sensitive = Boolean(True)
    outputs = (Out("BOOLEAN", "BOOLEAN"),)

    def run(self, ctx):
        a, b = (self.string_a, self.string_b) if self.case_sensitive else (self.string_a.lower(), self.string_b.lower())
        return {"Equal": a == b, "Starts With": a.startswith(b), "Ends With": a.endswith(b)}[self.mode]


class RegexMatch(_Text):
    display_name = "Match Text"
    string = String(multiline=True)
    regex_pattern = String(multiline=True)
    case_insensitive = Boolean(True)
    multiline = Boolean(False)
    dotall = Boolean(False)
    outputs = (Out("BOOLEAN", "matches"),)

    def run(self, ctx):
        try:
            return re.search(self.regex_pattern, self.string,
                             _flags(self.case_insensitive, self.multiline, self.dotall)) is not None
        except re.error:  # an invalid pattern matches nothing, as in ComfyUI
            return False


class RegexExtract(_Text):
    """The first match, all matches, the first match's group `group_index` or that group of every
    match; matches are joined by new lines; an invalid pattern gives an empty text (as ComfyUI)."""
    display_name = "Extract Text"
    string = String(multiline=True)
    regex_pattern = String(multiline=True)
    mode = Combo(["First Match", "All Matches", "First Group", "All Groups"])
    case_insensitive = Boolean(True)
    multiline = Boolean(False)
    dotall = Boolean(False)
    group_index = Int(1, min=0, max=100)

    def run(self, ctx):
        try:
            pattern = re.compile(self.regex_pattern, _flags(self.case_insensitive, self.multiline, self.dotall))
        except re.error:
            return ""
        group = self.group_index
        if self.mode == "First Match":
            match = pattern.search(self.string)
            return match.group(0) if match else ""
        if self.mode == "All Matches":
            found = pattern.findall(self.string)
            return "\n".join(m[0] if isinstance(m, tuple) else m for m in found)
        if self.mode == "First Group":
            match = pattern.search(self.string)
            ok = match is not None and len(match.groups()) >= group and match.group(group) is not None
            return match.group(group) if ok else ""
        if self.mode == "All Groups":
            return "\n".join(m.group(group) for m in pattern.finditer(self.string)
                             if m.groups() and len(m.groups()) >= group and m.group(group) is not None)
        return ""


class RegexReplace(_Text):
    """re.sub of the pattern; `count` 0 replaces every match."""
    display_name = "Replace Text (Regex)"
    string = String(multiline=True)
    regex_pattern = String(multiline=True)
    replace = String(multiline=True)
    case_insensitive = Boolean(True, optional=True)
    multiline = Boolean(False, optional=True)
    dotall = Boolean(False, optional=True, tooltip="When enabled, the dot (.) character will match any character "
                     "including newline characters. When disabled, dots won't match newlines.")
    count = Int(0, min=0, max=100, optional=True, tooltip="Maximum number of replacements to make. Set to 0 to "
                "replace all occurrences (default). Set to 1 to replace only the first match, 2 for the first "
                "two matches, etc.")

    def run(self, ctx):
        return re.sub(self.regex_pattern, self.replace, self.string, count=self.count,
                      flags=_flags(self.case_insensitive, self.multiline, self.dotall))


class JsonExtractString(_Text):
    """The value of `key` in the first JSON object found in the text (in a Markdown code block too);
    empty when there is none or it lacks the key."""
    display_name = "Extract Text from JSON"
    json_string = String(multiline=True)
    key = String("")

    def run(self, ctx):
        decoder = json.JSONDecoder()
        for match in re.finditer(r"\{", self.json_string):
            try:
                data, _ = decoder.raw_decode(self.json_string, match.start())
            except json.JSONDecodeError:
                continue
            value = data.get(self.key)
            return "" if value is None else str(value)
        return ""


def _dump(value, indent: int) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent or None)


class ConvertDictionaryToString(_Text):
    display_name = "Convert Dictionary to String"
    dictionary = In("DICT")
    indent = Int(2, min=0, max=8, tooltip="Spaces per indent level. 0 produces compact single-line string.")

    def run(self, ctx):
        return _dump(self.dictionary, self.indent)


class ConvertArrayToString(_Text):
    display_name = "Convert Array to String"
    array = In("ARRAY")
    indent = Int(2, min=0, max=8, tooltip="Spaces per indent level. 0 produces compact single-line string.")

    def run(self, ctx):
        return _dump(self.array, self.indent)

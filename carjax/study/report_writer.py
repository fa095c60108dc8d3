"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML file.

Building the content once and rendering it twice keeps `report.md` and `report.html`
identical in content; the HTML carries its figures inline (base64), so it can be mailed or
opened anywhere on its own, while the Markdown links the PNGs beside it.

Text may use a tiny inline subset of Markdown, which the HTML renderer understands too:
`code`, **bold** and [label](relative/link).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os
import re
from typing import Sequence

_INLINE_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f2f2f2; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
code { background: #f4f4f4; padding: 0 3px; }
"""


@dataclasses.dataclass
class Block:
  kind: str  # 'heading', 'paragraph', 'bullets', 'table', 'figure'
  text: str = ""
  level: int = 2
  items: Sequence[str] = ()
  header: Sequence[str] = ()
  rows: Sequence[Sequence[str]] = ()
  path: str = ""  # figure: relative to the report folder


class Report:
  """Accumulates blocks; `write(folder)` writes report.md and report.html there."""

  def __init__(self, title: str):
    self.title = title
    self.blocks: list[Block] = []

  def heading(self, text: str, level: int = 2) -> None:
    self.blocks.append(Block("heading", text=text, level=level))

  def paragraph(self, text: str) -> None:
    self.blocks.append(Block("paragraph", text=text))

  def bullets(self, items: Sequence[str]) -> None:
    self.blocks.append(Block("bullets", items=list(items)))

  def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    self.blocks.append(Block("table", header=list(header), rows=[list(r) for r in rows]))

  def figure(self, path: str, caption: str) -> None:
    """`path` relative to the report folder (where report.md lives)."""
    self.blocks.append(Block("figure", path=path, text=caption))

  def to_markdown(self) -> str:
    out = [f"# {self.title}", ""]
    for b in self.blocks:
      if b.kind == "heading":
        out += ["#" * b.level + " " + b.text, ""]
      elif b.kind == "paragraph":
        out += [b.text, ""]
      elif b.kind == "bullets":
        out += [f"- {item}" for item in b.items] + [""]
      elif b.kind == "table":
        cell = lambda s: str(s).replace("|", "\\|")
        out.append("| " + " | ".join(cell(h) for h in b.header) + " |")
        out.append("|" + "|".join("---:" if numeric else "---"
                                  for numeric in _numeric_columns(b)) + "|")
        out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b.rows]
        out.append("")
      elif b.kind == "figure":
        alt = _LINK.sub(r"\1", b.text)  # A link inside image alt text breaks the image.
        out += [f"![{alt}]({b.path})", "", f"*{b.text}*", ""]
    return "\n".join(out)

  def to_html(self, folder: str) -> str:
    """HTML with every figure read from `folder` and embedded as a base64 data URI."""
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
           f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(self.title)}</h1>"]
    for b in self.blocks:
      if b.kind == "heading":
        out.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
      elif b.kind == "paragraph":
        out.append(f"<p>{_inline_html(b.text)}</p>")
      elif b.kind == "bullets":
        out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
      elif b.kind == "table":
        align = ["right" if numeric else "left" for numeric in _numeric_columns(b)]
        head = "".join(f"<th style='text-align:{a}'>{_inline_html(h)}</th>"
                       for h, a in zip(b.header, align))
        body = "".join("<tr>" + "".join(f"<td style='text-align:{a}'>{_inline_html(str(c))}</td>"
                                        for c, a in zip(row, align)) + "</tr>" for row in b.rows)
        out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
      elif b.kind == "figure":
        with open(os.path.join(folder, b.path), "rb") as f:
          data = base64.b64encode(f.read()).decode("ascii")
        caption = _inline_html(b.text)
        alt = html.escape(_LINK.sub(r"\1", b.text), quote=True)
        out.append(f"<figure><img alt='{alt}' "
                   f"src=\"data:image/png;base64,{data}\"><figcaption>{caption}</figcaption>"
                   "</figure>")
    out.append("</body></html>")
    return "\n".join(out)

  def write(self, folder: str) -> tuple[str, str]:
    """Writes report.md and report.html into `folder`; returns their paths."""
    md_path = os.path.join(folder, "report.md")
    html_path = os.path.join(folder, "report.html")
    with open(md_path, "w", encoding="utf-8") as f:
      f.write(self.to_markdown())
    with open(html_path, "w", encoding="utf-8") as f:
      f.write(self.to_html(folder))
    return md_path, html_path


def _numeric_columns(block: Block) -> list[bool]:
  """Whether each column holds only numbers (right-aligned) or text (left-aligned)."""
  def is_number(text) -> bool:
    text = str(text).replace(",", "").strip()
    if text in ("", "–", "-"):
      return True
    try:
      float(text)
      return True
    except ValueError:
      return False
  columns = list(zip(*block.rows)) or [() for _ in block.header]
  return [all(is_number(c) for c in column) and any(str(c).strip() not in ("", "–", "-")
                                                    for c in column)
          for column in columns]


def _inline_html(text: str) -> str:
  """Escapes text, then renders the inline Markdown subset (code, bold, links)."""
  escaped = html.escape(text, quote=False)
  escaped = _INLINE_CODE.sub(r"<code>\1</code>", escaped)
  escaped = _BOLD.sub(r"<b>\1</b>", escaped)
  return _LINK.sub(r"<a href='\2'>\1</a>", escaped)

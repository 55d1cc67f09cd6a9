"""``python -m settings > docs/flags.md``: the reference of every flag, generated from the fields (a test
checks that the page is current)."""

from settings.reference import flags_markdown

print(flags_markdown(), end="")

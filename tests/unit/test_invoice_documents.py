"""The invoice document codec: a field added to the core reads back with its default from a
document stored before it existed."""

from __future__ import annotations

import orjson

from meterline.adapters.invoice_documents import invoice_document, invoice_from_document
from tests.harness.invoices import invoice, line


def test_a_line_says_whether_its_metric_recurs_and_old_documents_read_as_not():
    stored = invoice(version=1, lines=(line("charge|seats", 3000, recurring=True), line()))
    doc = invoice_document(stored, 1)
    assert [read.recurring for read in invoice_from_document(doc).lines] == [True, False]
    old = orjson.loads(doc)
    for data in old["lines"]:
        del data["recurring"]  # as written before lines recorded it
    assert invoice_from_document(orjson.dumps(old)) == invoice_from_document(invoice_document(
        invoice(version=1, lines=(line("charge|seats", 3000), line())), 1))

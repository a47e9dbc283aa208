"""The toy study behind notebooks 01-05 and `python -m vavae_lab reproduce`: named runs, cached by config."""
from .report import TOKENIZER_COLUMNS, collect, reproduce, show_table, write_report
from .runner import Study
from .tables import TABLES
from .variants import TABLE1, TOKENIZERS, table1_overrides

__all__ = ["Study", "TOKENIZERS", "TABLE1", "table1_overrides", "reproduce", "collect", "write_report", "show_table",
           "TOKENIZER_COLUMNS", "TABLES"]

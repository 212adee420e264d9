"""Queries over a collection's rows: the filter language (``filters``), typed columns of metadata fields
(``columns``), the rows a call may see (``selection``), the plan chosen from their number (``planner``), and
the search of one snapshot under it (``execute``)."""

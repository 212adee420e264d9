"""Index structures: map row numbers to row numbers, seeing vectors only through codecs."""

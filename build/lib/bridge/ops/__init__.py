"""Operations: the refbridge command, refbridge run, metrics and reports."""

"""`clfbatch watch`: the folder-watch daemon (cli, settings, daemon, inbox, journal, work,
predict, placement, report)."""

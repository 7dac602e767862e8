"""One module per scenario: the protocol (what is trained, what is measured). Each defines run(cfg, ctx)."""

"""What more than one process reads (the state store), a step's own scratch folder, and the
frames passed between assets."""

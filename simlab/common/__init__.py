"""What every layer of simlab shares: atomic file writes, the command-line conventions, optional extras."""

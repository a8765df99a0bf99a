"""fraudlab: settings, errors and the command line that wire the four planes together."""

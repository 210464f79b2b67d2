"""absl entry points: flags plus one library call each (`python -m launch.<name>`)."""

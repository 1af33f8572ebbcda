"""The `codeassist` command line: one command, a subcommand per job."""

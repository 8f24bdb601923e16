"""The subcommands of ``readside``, by group; ``readside.cli`` builds the parser from them and
runs the one chosen. Each group's ``add_commands`` declares its subcommands (arguments, help
texts) and the function that runs each."""

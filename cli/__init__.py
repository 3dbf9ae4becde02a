"""segtool's command line (typer); `segtool --help` lists the commands."""

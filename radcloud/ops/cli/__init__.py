"""radcloud's command line (typer): ``radcloud stack up|down|status|logs|seed``."""

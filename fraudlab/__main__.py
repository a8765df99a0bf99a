from fraudlab.cli import app

app()

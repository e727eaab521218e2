from recstream.cli import app

app(prog_name="recstream")

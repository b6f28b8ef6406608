"""`python -m api` serves the API with uvicorn on API_HOST:API_PORT."""

from api.main import main

main()

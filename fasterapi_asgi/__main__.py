from fasterapi_asgi.main import main

if __name__ == "__main__":
    main()

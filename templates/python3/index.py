"""Entry point fwatchdog runs for each request (classic mode).

The request body arrives on stdin; whatever handle() returns is printed to stdout and
becomes the response body. Request headers are in Http_* environment variables.
"""

import sys

from function import handler


def main():
    body = sys.stdin.read()
    result = handler.handle(body)
    if result is not None:
        print(result)


if __name__ == "__main__":
    main()

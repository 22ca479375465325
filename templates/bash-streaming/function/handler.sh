#!/usr/bin/env bash
# Runs once per request. The request body is on stdin; what this prints is the response,
# sent to the client line by line as it is printed. Request headers are in Http_*
# variables (Http_Method, Http_Path, Http_Content_Type, ...). A non-zero exit before any
# output makes the response a 500; after output, the response is cut off so the client
# can tell it failed.
set -euo pipefail

echo "Hello from bash: ${Http_Method:-POST} ${Http_Path:-/}"
n=0
while IFS= read -r line || [[ -n "$line" ]]; do
  n=$((n + 1))
  printf '%d: %s\n' "$n" "$line"
done
echo "lines: $n"

#!/bin/sh
echo "1..1"
echo "not ok 1 - cmocka was not found at configure time: install libcmocka-dev and re-run configure"
exit 1

#!/bin/sh
echo "1..1"
echo "not ok 1 - pam_wrapper was not found at configure time: install libpam-wrapper and re-run configure"
exit 1

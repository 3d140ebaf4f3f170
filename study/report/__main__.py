"""python -m study.report studies/<name> [--out FILE]"""
from study.report.report import main

raise SystemExit(main())

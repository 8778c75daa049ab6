from bankllm.cli import main

raise SystemExit(main())

from pmtrec_lab.benefit.report import main

raise SystemExit(main())

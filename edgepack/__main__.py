from edgepack.cli.entry import main

main()

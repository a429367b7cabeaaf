from tungstenkit.cli.commands import main

main()

"""Small pieces every layer uses: legal unique names (naming), exact Python literals (literal), did-you-mean (suggest),
bounded file reading (paths). Imports nothing else of specc but ``errors``.
"""

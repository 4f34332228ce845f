"""Backend 2: the IR to one standalone script: the model's code as torch.fx emits it (emit), the rest of the script
(script) through the Jinja templates in templates/.
"""

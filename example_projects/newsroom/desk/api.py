"""JSON endpoints of the newsroom."""

from django.http import JsonResponse

from .models import Section, Story
from .serializers import story_data, story_data_with_tags


def story_list(request):
    stories = Story.objects.select_related("section", "reporter").order_by("pk")
    return JsonResponse({"stories": [story_data(s) for s in stories]})


def story_list_with_tags(request):
    # Known N+1 (one tag query per story); its test pins the count with assertNumQueries
    # until the endpoint gets its prefetch_related("tags").
    stories = Story.objects.select_related("section", "reporter").order_by("pk")
    return JsonResponse({"stories": [story_data_with_tags(s) for s in stories]})


def section_detail(request, section_id):
    section = Section.objects.get(pk=section_id)
    return JsonResponse({"name": section.name, "stories": section.stories.count()})
